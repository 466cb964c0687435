"""Build the narrow-domain tool-calling example: a bank's assistant with a FIXED list of 12 tools,
answering real customer utterances from NLU++ (banking domain, PolyAI, CC BY 4.0).

    python examples/nlu_tools/build_log.py [--src ../shared/data/nlupp]

Writes, beside this script:
    prompt_log.jsonl.gz       OpenAI chat-format request log: the same `tools` on every request, the
                              recorded answer an assistant message with `tool_calls` (content null)
                              or, when no tool applies, a short text reply
    reference_answers.jsonl   {"id", "user", "tools": tool names, "response", "tool_calls"?} for the reference teacher

How an annotation becomes an answer (TOOL_RULES, in order; each tool at most once per answer):
NLU++ intents pick the tools, its slot spans become arguments (the span text, exactly as typed),
and a few intents become categorical arguments (account_type, reason, product). An utterance
no rule covers gets one of a handful of fixed text replies (greeting, thanks, yes/no, a request
to say more). That is the shape distillation is for: a few tools, categorical or copied
arguments, and kind auto picks the encoder classifier (student/toolcall_shape.py).
Deterministic: rerunning produces identical files.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-2024-08-06"
SYSTEM = ("You are the virtual assistant of a retail bank. Use the tools to act on the customer's request; "
          "when no tool applies, answer briefly in text.")

ACCOUNT_TYPES = {"savings": "savings", "current": "current", "business": "business"}
TOPICS = {"pin": "pin", "cheque": "cheque", "standing_order": "standing_order", "direct_debit": "direct_debit",
          "contactless": "contactless", "withdrawal": "withdrawal", "international": "international", "refund": "refund",
          "limits": "limits", "overdraft": "overdraft", "mortgage": "mortgage", "loan": "loan", "card": "card",
          "transfer_payment_deposit": "transfer", "account": "account", "appointment": "appointment"}
PRODUCTS = {"loan": "loan", "mortgage": "mortgage", "overdraft": "overdraft", "credit": "credit_card"}


def _fn(name: str, description: str, props: dict, required: list[str] | None = None) -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": props, "required": required or []}}}


S = {"type": "string"}
TOOLS = [
    _fn("transfer_money", "Send money or make a payment from the customer's account.",
        {"amount": {**S, "description": "Amount as the customer said it"}, "recipient": {**S, "description": "Person or company to pay"},
         "date": {**S, "description": "When, as the customer said it"}}),
    _fn("block_card", "Block or cancel a card.", {"reason": {"type": "string", "enum": ["lost_or_stolen", "cancel"]}}, ["reason"]),
    _fn("report_card_problem", "Report a card that does not work, is not showing or was declined.", {}),
    _fn("get_balance", "Read an account's balance.", {"account_type": {"type": "string", "enum": sorted(ACCOUNT_TYPES.values())}}),
    _fn("open_account", "Open a new account.", {"account_type": {"type": "string", "enum": sorted(ACCOUNT_TYPES.values())}}),
    _fn("apply_for_credit", "Apply for or change a loan, mortgage, overdraft or credit card.",
        {"product": {"type": "string", "enum": sorted(PRODUCTS.values())}, "amount": {**S, "description": "Amount as the customer said it"}},
        ["product"]),
    _fn("book_appointment", "Book an appointment at a branch.", {"date": S, "time": S}),
    _fn("manage_standing_order", "Create, change or cancel a standing order or direct debit.",
        {"action": {"type": "string", "enum": ["cancel", "change", "create"]}, "recipient": S, "amount": S, "date": S}, ["action"]),
    _fn("track_arrival", "Say when a card, PIN, cheque or transfer will arrive.",
        {"item": {"type": "string", "enum": ["card", "cheque", "pin", "transfer"]}}, ["item"]),
    _fn("reset_pin", "Reset or unblock the card's PIN.", {}),
    _fn("search_help", "Look up the bank's help pages on a topic (how, why, when and how-much questions).",
        {"topic": {"type": "string", "enum": sorted(set(TOPICS.values()))}}, ["topic"]),
    _fn("get_fees", "Explain fees and interest rates.", {"product": {"type": "string", "enum": sorted(set(PRODUCTS.values()) | {"account", "card", "transfer"})}}),
]

REPLIES = {
    "greet": "Hello! How can I help you with your banking today?",
    "thank": "You're welcome. Is there anything else I can do?",
    "end_call": "Thank you for banking with us. Goodbye!",
    "handoff": "I'll connect you with one of our agents now.",
    "affirm": "Great, thank you.",
    "deny": "No problem.",
}
FALLBACK = "I can help with payments, cards, balances, accounts, credit and appointments. Could you tell me a little more?"


def _slot(ex: dict, *names: str) -> str | None:
    slots = ex.get("slots") or {}
    for n in names:
        if n in slots:
            return slots[n]["text"]
    return None


def _first(ints: set[str], table: dict[str, str]) -> str | None:
    return next((v for k, v in table.items() if k in ints), None)


def calls_for(ex: dict) -> list[dict]:
    """The tool calls an utterance's annotation asks for (each tool at most once), in TOOLS order."""
    ints = set(ex.get("intents") or [])
    out: list[dict] = []

    def call(name: str, **args) -> None:
        out.append({"name": name, "arguments": {k: v for k, v in args.items() if v is not None}})

    asks = ints & {"request_info", "how", "why", "how_much", "how_long", "when"}
    if "transfer_payment_deposit" in ints and not asks and not ints & {"fees_interests", "arrival", "standing_order", "direct_debit", "cheque"}:
        call("transfer_money", amount=_slot(ex, "amount_of_money"), recipient=_slot(ex, "person_name", "company_name"), date=_slot(ex, "date"))
    if "card" in ints and "lost_stolen" in ints:
        call("block_card", reason="lost_or_stolen")
    elif "card" in ints and "cancel_close_leave_freeze" in ints:
        call("block_card", reason="cancel")
    if "card" in ints and "wrong_notworking_notshowing" in ints and "lost_stolen" not in ints:
        call("report_card_problem")
    if "balance" in ints:
        call("get_balance", account_type=_first(ints, ACCOUNT_TYPES))
    if ("account" in ints or ints & set(ACCOUNT_TYPES)) and "make_open_apply_setup_get_activate" in ints \
            and not ints & {"loan", "mortgage", "overdraft", "card", "standing_order", "direct_debit", "appointment"}:
        call("open_account", account_type=_first(ints, ACCOUNT_TYPES))
    product = _first(ints, {k: v for k, v in PRODUCTS.items() if k != "credit"}) or ("credit_card" if {"credit", "card"} <= ints else None)
    if product and ints & {"make_open_apply_setup_get_activate", "change", "more_higher_after"} and "fees_interests" not in ints:
        call("apply_for_credit", product=product, amount=_slot(ex, "amount_of_money"))
    if ints & {"standing_order", "direct_debit"}:
        action = ("cancel" if "cancel_close_leave_freeze" in ints else "change" if ints & {"change", "more_higher_after", "less_lower_before"}
                  else "create" if "make_open_apply_setup_get_activate" in ints or "new" in ints else None)
        if action and not asks:
            call("manage_standing_order", action=action, recipient=_slot(ex, "person_name", "company_name"),
                 amount=_slot(ex, "amount_of_money"), date=_slot(ex, "date"))
    if "arrival" in ints:
        item = "pin" if "pin" in ints else "card" if "card" in ints else "cheque" if "cheque" in ints else "transfer" if "transfer_payment_deposit" in ints else None
        if item:
            call("track_arrival", item=item)
    if "pin" in ints and ints & {"change", "wrong_notworking_notshowing", "lost_stolen", "dont_know"} and "arrival" not in ints:
        call("reset_pin")
    if "appointment" in ints and not asks - {"when"}:
        call("book_appointment", date=_slot(ex, "date", "date_period"), time=_slot(ex, "time", "time_from"))
    if asks and not out and "fees_interests" not in ints:
        topic = _first(ints, TOPICS)
        if topic:
            call("search_help", topic=topic)
    if "fees_interests" in ints:
        call("get_fees", product=product or ("transfer" if "transfer_payment_deposit" in ints else "card" if "card" in ints else
                                              "account" if "account" in ints else None))
    return out


def text_reply(ex: dict) -> str:
    ints = set(ex.get("intents") or [])
    return next((r for k, r in REPLIES.items() if k in ints), FALLBACK)


def build(src: Path, out: Path) -> dict:
    t0 = datetime(2026, 2, 2, 8, 0, tzinfo=timezone.utc)
    log, refs = [], []
    names = [t["function"]["name"] for t in TOOLS]
    folds = sorted((src / "banking").glob("fold*.json"), key=lambda p: int(p.stem[4:]))
    n_calls = 0
    for fold in folds:
        for i, ex in enumerate(json.loads(fold.read_text())):
            rid = f"nlutools-{fold.stem}-{i:03d}"
            calls = calls_for(ex)
            n_calls += len(calls)
            if calls:
                wire = [{"id": "call_" + hashlib.sha256(f"{rid}:{j}".encode()).hexdigest()[:24], "type": "function",
                         "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}} for j, c in enumerate(calls)]
                response = {"role": "assistant", "content": None, "tool_calls": wire}
                ref = {"id": rid, "user": ex["text"], "tools": names, "response": "", "tool_calls": calls}
            else:
                response = {"role": "assistant", "content": text_reply(ex)}
                ref = {"id": rid, "user": ex["text"], "tools": names, "response": text_reply(ex)}
            log.append({
                "id": rid,
                "timestamp": (t0 + timedelta(minutes=9 * len(log))).isoformat().replace("+00:00", "Z"),
                "model": MODEL,
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ex["text"]}],
                "tools": TOOLS,
                "response": response,
                "metadata": {"source": "nlupp", "domain": "banking", "fold": int(fold.stem[4:])},
            })
            refs.append(ref)
    with open(out / "prompt_log.jsonl.gz", "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in log).encode("utf-8"))
    with open(out / "reference_answers.jsonl", "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in refs))
    with_calls = sum(1 for r in refs if r.get("tool_calls"))
    return {"records": len(log), "with_calls": with_calls, "calls": n_calls, "text_answers": len(log) - with_calls,
            "parallel": sum(1 for r in refs if len(r.get("tool_calls") or []) > 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "nlupp", help="NLU++ data directory")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    a = ap.parse_args()
    print(json.dumps(build(a.src, a.out)))
