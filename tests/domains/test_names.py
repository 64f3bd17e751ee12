"""Domain names as codeb accepts them (pure): IDNA to punycode, labels, length, wildcards
only with a DNS-01 issuer, nothing that could break out of a Caddyfile or a zone."""

from __future__ import annotations

import pytest

from codeb.errors import ValidationFailed
from codeb.features.domains.service import validate_domain, zone_changes, zone_for
from codeb.providers.dns import RRset


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("shop.example.test", "shop.example.test"),
        ("Shop.Example.TEST.", "shop.example.test"),
        ("bücher.example.test", "xn--bcher-kva.example.test"),
        ("xn--bcher-kva.example.test", "xn--bcher-kva.example.test"),
        ("\uff33\uff28\uff2f\uff30.example.test", "shop.example.test"),  # full-width SHOP folds
        ("a-b.c1.example.test", "a-b.c1.example.test"),
        ("a" * 63 + ".test", "a" * 63 + ".test"),
    ],
)
def test_accepted_names_are_stored_as_punycode(given: str, stored: str) -> None:
    assert validate_domain(given) == stored


LONG = ".".join(["a" * 63] * 4)  # 255 characters


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("evil.test\n", "control"),
        ("evil.test\r\nx.test", "control"),
        ("a..b", "empty label"),
        (".a.test", "empty label"),
        (LONG[:254], "at most 253"),
        ("a" * 64 + ".test", "1-63"),
        ("*.x.test", "DNS-01"),
        ("a.*.test", "'*'"),
        ("{{x}}.test", "letters"),
        ("x.test {", "control characters or spaces"),
        ("x.test}\nimport /etc/passwd", "control"),
        ("shop.example.test:443", "letters"),
        ("shop.example.test/path", "letters"),
        ("-shop.example.test", "inner hyphens"),
        ("shop-.example.test", "inner hyphens"),
        ("-bücher.example.test", "hyphen"),
        ("localhost", "two labels"),
        ("1.2.3.4", "numeric"),
        ("shop\u200b.example.test", "control"),  # zero-width space (format character)
        ("", "required"),
    ],
)
def test_bad_names_are_refused(given: str, why: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        validate_domain(given)
    assert refused.value.status == 422
    assert why in refused.value.message


def test_a_name_that_becomes_too_long_as_punycode_is_refused() -> None:
    # Nine labels of twelve CJK characters: 122 characters, 270 as punycode.
    labels = ["".join(chr(0x4E00 + i * 37 + k) for i in range(12)) for k in range(9)]
    name = ".".join(labels) + ".test"
    assert len(name) < 253
    with pytest.raises(ValidationFailed, match=r"too long|at most 253"):
        validate_domain(name)


def test_wildcards_only_with_a_dns01_issuer() -> None:
    assert validate_domain("*.x.example.test", wildcard_allowed=True) == "*.x.example.test"
    with pytest.raises(ValidationFailed) as refused:
        validate_domain("*.x.example.test")
    assert refused.value.details["reason"] == "wildcard_without_dns01"
    with pytest.raises(ValidationFailed):
        validate_domain(123)  # type: ignore[arg-type]


def test_zone_for_a_name() -> None:
    assert zone_for("shop.example.test", []) == "example.test"
    assert zone_for("example.test", []) == "example.test"
    assert zone_for("a.b.example.test", ["example.test"]) == "example.test"
    assert zone_for("a.b.example.test", ["example.test", "b.example.test"]) == "b.example.test"
    assert zone_for("a.b.example.test", [], "example.test") == "example.test"
    with pytest.raises(ValidationFailed):
        zone_for("shop.other.test", [], "example.test")
    assert zone_for("*.x.example.test", []) == "example.test"


def test_zone_changes_touch_only_what_differs_and_what_codeb_manages() -> None:
    current = [
        RRset.of("example.test", "NS", ["ns1.example.test."], 3600),
        RRset.of("shop.example.test", "A", ["192.0.2.1"], 60),
        RRset.of("old.example.test", "A", ["192.0.2.1"], 60),
        RRset.of("mail.example.test", "MX", ["10 mx.example.test."], 60),  # not codeb's
    ]
    want = {
        ("example.test.", "NS"): RRset.of("example.test", "NS", ["ns1.example.test."], 3600),
        ("shop.example.test.", "A"): RRset.of("shop.example.test", "A", ["192.0.2.9"], 60),
    }
    managed = {("shop.example.test.", "A"), ("old.example.test.", "A")}
    changes = zone_changes("example.test", current, want, managed)
    assert [r.name for r in changes.replace] == ["shop.example.test."]
    assert changes.delete == [("old.example.test.", "A")]
    assert not changes.create
    view = changes.view()
    assert {"zone": "example.test.", "name": "old.example.test.", "type": "A",
            "changetype": "DELETE"} in view  # fmt: skip
    assert zone_changes("example.test", None, want, managed).create
