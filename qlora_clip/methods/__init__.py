"""The methods: one table of entries, and the code behind each entry.

    table.py         the table: every --mode, its PEFT class (or our own code), defaults and sources (no torch)
    peft_args.py     --peft_args key=value: any other field of a method's PEFT config, typed and checked
    doc.py           docs/methods.md's tables, generated from the table with measured parameter counts
    adapters.py      a method's adapter: config, attaching it, counts, the tower rule, zero-shot view, save/load/merge
    own_tuners.py    BitFit and full fine-tuning, the two methods PEFT has no config for
    step_rules.py    what a method adds to the training step (LoRA+, AdaLoRA) and EVA's data pass
    baselines/       the field's baselines on the frozen base (its __init__ maps it)
"""
