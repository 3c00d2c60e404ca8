"""The protocol card of a run: under which protocol its numbers were chosen (the results line's `protocol_card`).

The field's tables mix numbers chosen three ways (a method's published defaults, values tuned per
dataset, a validation or even the test set), which is why they do not compare. Every line says:
- `hyperparameters`: where they came from: the method's published defaults, its paper's
  per-dataset values (a baseline with a table of them), or flags the user changed from the
  defaults (`changed_flags` lists them, derived from the run's flags, never typed in);
- `selection`: how the reported model was chosen: the last step, or the best val accuracy checked
  every `select_every` steps (`selected_step`, and the checks);
- `validation`: what validation data it saw: none, the few-shot val images for --select_on val,
  or a baseline's own search on them;
- `test_set_used_to_choose`: false, always: no code path chooses on the test set (the selection's
  test, tests/test_evaluation_selection.py, fails a run that reads it before training ends).
`label` is the short form the summaries group tables by (summaries/cards.py): rows of different
labels are never averaged together.
"""
from __future__ import annotations

from qlora_clip.data.items import FewShotDataset
from qlora_clip.evaluation.selection import ModelSelection
from qlora_clip.methods.interface import PUBLISHED_DEFAULTS, Adapted
from qlora_clip.run.spec import RunSpec

FLAGS = "flags changed from the defaults"
# The flags that choose the reported step: the card's selection, not its hyperparameters.
SELECTION_FLAGS = ("select_on", "select_every")


def protocol_card(spec: RunSpec, adapted: Adapted, selection: ModelSelection, data: FewShotDataset) -> dict:
    own = adapted.protocol()
    changed = {name: value for name, value in spec.changed_flags().items() if name not in SELECTION_FLAGS}
    kind = FLAGS if changed else own.get("hyperparameters", PUBLISHED_DEFAULTS)
    card = {"hyperparameters": kind, "defaults_source": own.get("source", adapted.method.defaults.source),
            "changed_flags": changed, **selection.card()}
    if selection.evaluate is not None:
        per_class = len(data.val) / max(1, len(data.classnames))
        distinct = len({str(item.source) for item in data.val})
        repeats = f", {distinct} distinct" if distinct < len(data.val) else ""  # a class with fewer val images
        card["validation"] = f"the few-shot val images ({len(data.val)}, {per_class:g} per class{repeats})"
        seen = "few-shot val images"
    elif "validation" in own:
        card["validation"] = own["validation"]
        seen = "few-shot val images (the method's own search)"
    else:
        card["validation"] = "none"
        seen = "no validation data"
    card["test_set_used_to_choose"] = False
    card["label"] = f"{kind}; {card['selection']}; {seen}"
    return card
