"""Cost of validating one request body, the way codeb reads it and the alternatives.

For each request shape of the API (its declared `example`), per body:
  - codeb: the control-character/depth pass plus msgspec.convert against the Struct (what
    codeb.api.body.read_json does after JSON decoding);
  - jsonschema: Draft 2020-12 iter_errors against the schema the document publishes for it
    (what codeb did before the shapes were Structs);
  - msgspec alone (the Struct, no pre-pass).

    .venv/bin/python bench/body_validation.py [--number 20000]

Runs in-process; prints microseconds per body (best of 3 repeats). jsonschema is optional
(the test extras bring it through openapi-spec-validator); without it that column is "-".
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

from codeb.api.body import _depth_and_controls, _json_numbers
from codeb.app import wiring


def _per_body_us(fn, number: int) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    document = wiring().document
    try:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        Draft202012Validator = None  # type: ignore[assignment,misc]
    shapes = {
        op.body.__name__: op.body
        for route in wiring().routes
        for op in route.ops.values()
        if op.body is not None
    }
    print(f"{'shape':24s} {'codeb us':>9s} {'msgspec us':>11s} {'jsonschema us':>14s}")
    for name, shape in sorted(shapes.items()):
        body = getattr(shape, "example", None)
        if body is None:
            print(f"{name:24s} (no example declared)")
            continue

        def codeb(body=body, shape=shape) -> None:  # type: ignore[no-untyped-def]
            if not list(_depth_and_controls(body)):
                msgspec.convert(_json_numbers(body), shape)

        def bare(body=body, shape=shape) -> None:  # type: ignore[no-untyped-def]
            msgspec.convert(body, shape)

        ours, alone = _per_body_us(codeb, args.number), _per_body_us(bare, args.number)
        theirs = "-"
        if Draft202012Validator is not None:
            resource = Resource.from_contents(document, default_specification=DRAFT202012)
            registry = Registry().with_resource("urn:codeb", resource)
            validator = Draft202012Validator(
                {"$ref": f"urn:codeb#/components/schemas/{name}"}, registry=registry
            )
            assert not list(validator.iter_errors(body)), name
            cost = _per_body_us(
                lambda v=validator, b=body: list(v.iter_errors(b)), args.number // 10
            )
            theirs = f"{cost:14.1f}"
        print(f"{name:24s} {ours:9.1f} {alone:11.1f} {theirs:>14s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
