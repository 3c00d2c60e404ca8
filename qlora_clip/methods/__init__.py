"""The methods: one table of entries, and the code behind each entry (one interface for all).

    table.py         the table: every --mode, what kind it is, the class behind it, its PEFT class (or our own
                     code), defaults and sources, the flags it refuses (no torch: the CLI reads it)
    settings.py      the method flags (AdapterConfig: --mode, --quantize, --r, --alpha, ...) and its targets
    peft_args.py     --peft_args key=value: any other field of a method's PEFT config, typed and checked
    interface.py     Adapted: what every method does for the trainer, the evaluator and the record; build,
                     load_adapted
    peft_tuners.py   PeftAdapter (every PEFT tuner of the table), ResidualInit (PiSSA, OLoRA)
    own_tuners.py    BitFit and full fine-tuning, the two methods PEFT has no config for
    eva.py           EVA: LoRA initialised from the train images' activations
    loftq.py         LoftQ: LoRA initialised against the 4-bit base's quantization error
    loraplus.py      LoRA+: B at a multiple of the learning rate
    adalora.py       AdaLoRA: its schedule, orthogonality regulariser and rank allocation
    svd.py           CLIP-SVD: the singular values of every Linear of the selected layers, U and V frozen
    two_stage.py     2SFS: the per-block LayerNorms, then a classifier, two stages of the shared loop
    published.py     the published schedules of CLIP-SVD, 2SFS, ProKeR and CLAP, each value cited (no torch)
    doc.py           docs/methods.md's tables, generated from the table with measured parameter counts
    baselines/       the field's baselines, fitted on frozen features (its __init__ maps it)
    prompts/         the prompt learners trained through the loop: CoCoOp, KgCoOp, MaPLe, PromptSRC (its __init__
                     maps it)
"""
