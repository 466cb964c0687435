"""PII redaction: what is caught, what is left alone, and placeholder consistency."""
import pytest

from ingest.pii import Redactor, iban_ok, luhn_ok


@pytest.mark.parametrize("text,expected", [
    ("write to Jane.Doe+bank@mail.example.co.uk today", "write to <EMAIL_1> today"),
    ("card 4111 1111 1111 1111 please", "card <CARD_1> please"),
    ("card 4111-1111-1111-1111.", "card <CARD_1>."),
    ("amex 378282246310005", "amex <CARD_1>"),
    ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN <IBAN_1> thanks"),
    ("iban DE89370400440532013000", "iban <IBAN_1>"),
    ("ssn 123-45-6789", "ssn <SSN_1>"),
    ("NI number AB 12 34 56 C", "NI number <NINO_1>"),
    ("call +44 20 7946 0958", "call <PHONE_1>"),
    ("call 020 7946 0958", "call <PHONE_1>"),
    ("call (555) 123-4567 now", "call <PHONE_1> now"),
    ("call 555-123-4567 or 0044 20 7946 0958", "call <PHONE_1> or <PHONE_2>"),
])
def test_detects(text, expected):
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",
    "IBAN GB82 WEST 1234 5698 7654 33 fails mod 97",
    "I topped up 100 GBP on 12/03/2024 at 10:30",
    "order 123456 shipped, ref 2024-01-05",
    "ssn 000-12-3456 is not issued",
    "QQ 12 34 56 C is not a valid NINO prefix",
    "reference 123456789012345678 (a long id, no separators)",
    "the year 2026 and a pin of 1234",
])
def test_leaves_alone(text):
    r = Redactor()
    assert r.redact(text) == text and not r.counts


def test_same_value_same_placeholder_across_records_and_formats():
    r = Redactor()
    a = r.redact("card 4111 1111 1111 1111, mail A@B.com")
    b = r.redact("again 4111111111111111 and a@b.com, also c@d.org")
    assert a == "card <CARD_1>, mail <EMAIL_1>"
    assert b == "again <CARD_1> and <EMAIL_1>, also <EMAIL_2>"
    assert r.counts == {"card": 2, "email": 3}


def test_cached_texts_still_count():
    r = Redactor()
    for _ in range(3):
        assert r.redact("mail a@b.com") == "mail <EMAIL_1>"
    assert r.counts["email"] == 3


def test_types_can_be_limited():
    r = Redactor(["email"])
    assert r.redact("a@b.com 4111 1111 1111 1111") == "<EMAIL_1> 4111 1111 1111 1111"


def test_redacts_record_messages_and_response():
    r = Redactor()
    rec = {"messages": [{"role": "user", "content": "I am a@b.com"}], "response": "Hi a@b.com"}
    r.redact_record(rec)
    assert rec == {"messages": [{"role": "user", "content": "I am <EMAIL_1>"}], "response": "Hi <EMAIL_1>"}


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
