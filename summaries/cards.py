"""Protocol cards in the summaries: tables are built per card, and each says its card (qlora_clip/run/card.py).

A run's card says where its hyperparameters came from, how its reported model was chosen and what
validation data it saw. Numbers chosen under different cards do not compare, so summarize.py
builds every table from the runs of one card at a time and never averages across cards: with
several cards, each gets its own tables (and its CSV and PNG files their own folder).
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

# Lines written before the card existed: the reported model was the last step's (no other rule existed), but
# where their hyperparameters came from was not recorded.
NO_CARD = "no protocol card (recorded before cards: last step, hyperparameters not recorded)"


def card_label(record: dict) -> str:
    card = record.get("protocol_card")
    return card.get("label", NO_CARD) if isinstance(card, dict) else NO_CARD


def by_card(records: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    """(card label, its records), in the order the cards first appear."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[card_label(record)].append(record)
    yield from groups.items()


def folder_name(label: str) -> str:
    """A folder for one card's files: 'published-defaults_last-step_no-validation-data'."""
    return "_".join(re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in label.split(";"))


def with_card(markdown: str, label: str) -> str:
    """Each table of `markdown` (a `## ` heading) says the card its runs were chosen under, under its heading."""
    return re.sub(r"^(## .*)$", lambda m: f"{m.group(1)}\n\nProtocol card: {label}.", markdown, flags=re.M)
