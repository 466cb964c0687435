import pytest

from core.base import DistillError
from teacher.filter_config import RefusalFilterConfig
from teacher.filters.refusal import RefusalFilter

from filter_records import rec

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I\u2019m sorry, but I can\u2019t assist with that request.",
    "I apologize, but I cannot provide instructions for accessing someone else's account.",
    "Sorry, I can't help with that.",
    "I cannot help with this request as it involves bypassing security checks.",
    "As an AI language model, I don't have access to your account details.",
    "I must respectfully decline to answer that.",
    "I'm unable to assist with that. If you believe your card was stolen, contact the bank.",
    "I'm afraid I can't do that.",
]
ANSWERS = [
    '{"intent": "lost_or_stolen_card"}',
    "I'm sorry to hear your card hasn't arrived! New cards usually take 3-5 working days.",
    "Sorry for the delay. Your transfer is pending and should arrive by tomorrow.",
    "You can't change your PIN in the app, but you can at any ATM: insert the card and choose 'PIN services'.",
    "We apologize for the extra charge; it is a one-off ATM fee from the machine's operator.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_realistic_refusals_dropped(text):
    v = RefusalFilter(RefusalFilterConfig()).check(rec(text))
    assert not v.keep and v.reason.startswith("refusal: matched")


@pytest.mark.parametrize("text", ANSWERS)
def test_apologetic_answers_kept(text):
    assert RefusalFilter(RefusalFilterConfig()).check(rec(text)).keep


def test_only_the_opening_is_searched():
    long_answer = "Here is how the dispute process works. " * 20 + "If the merchant says 'I cannot help with that', escalate."
    assert RefusalFilter(RefusalFilterConfig()).check(rec(long_answer)).keep


def test_extra_patterns_and_bad_regex():
    f = RefusalFilter(RefusalFilterConfig(extra_patterns=[r"^\{\"intent\": \"refuse\"\}$"]))
    assert not f.check(rec('{"intent": "refuse"}')).keep
    with pytest.raises(DistillError, match="filter.refusal.patterns"):
        RefusalFilter(RefusalFilterConfig(extra_patterns=["(unclosed"]))
