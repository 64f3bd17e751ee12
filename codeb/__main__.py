import sys

from codeb.cli import main

sys.exit(main())
