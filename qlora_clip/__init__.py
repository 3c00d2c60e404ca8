"""The library main.py composes: one module per concern, none of them reads the command line.

    paper.py          the published protocol's constants, grid and numbers (CLIP-LoRA, CoCoOp)
    config.py         typed settings of a run, one dataclass per part (model, train, data, eval, outputs)
    spec.py           RunSpec: a run as one value, its identity and every name and path derived from it
    schema.py         the results line, declared once (docs/results.md is generated from it)
    results.py        results files: appending atomically, reading with line-level errors, run identity
    methods.py        the table of methods: adapters (PEFT config, defaults, sources, 4-bit, merge), baselines
    methods_doc.py    docs/methods.md's tables, generated from that table with measured parameter counts
    peft_args.py      --peft_args key=value: any other field of a method's PEFT config, typed and checked
    targets.py        --encoder/--position/--params -> the names of the modules a method adapts
    adapters.py       a method's adapter: config, attaching it, counts, the tower rule, zero-shot view, save/load/merge
    own_methods.py    BitFit and full fine-tuning, the two methods PEFT has no config for
    method_training.py  what a method adds to the training step (LoRA+, AdaLoRA) and EVA's data pass
    errors.py         UserError, the one error type for bad input
    families.py       the backbone families (CLIP, SigLIP, SigLIP 2, MetaCLIP 2): what differs, chosen from config.json
    model.py          loading a checkpoint of a family (4-bit NF4 base or not) and putting the method's adapter on it
    compat.py         version-guarded work-arounds for the pinned libraries
    tiny_clip.py      the offline tiny checkpoint, and random checkpoints in real shapes for benchmarks
    tiny_backbones.py the other families' tiny offline checkpoints and base-model shapes for benchmarks
    encode.py         class prompts, text and image features, the family's logits
    losses.py         --loss: cross-entropy over the classes, SigLIP's sigmoid loss
    text_buckets.py   length buckets of class prompts (CLIP family), and the switch that allows them
    text_pass.py      the training step's text pass: once per optimizer step, sharded over processes
    evaluator.py      test-set accuracy, sharded over processes, image features reused when frozen,
                      zero-shot accuracies read from the zero-shot store when a run stored them
    zero_shot_cache.py  the zero-shot store: keyed JSON entries, written atomically, verified
    zero_shot_key.py  what a zero-shot accuracy depends on (the store's key)
    extra_evals.py    what a run evaluates besides its test set: base2new's new classes, --eval_datasets
    precision.py      compute dtype, autocast and gradient scaler, decided once
    memory.py         peak memory (CUDA allocator, or the CPU's resident set)
    distributed.py    data-parallel gradient and count sums, the text shares' gather, under accelerate launch
    checkpointing.py  --checkpoint_every / --resume: the whole training state
    saved_adapter.py  --save_path's adapter folders and the checks --eval_only makes before loading one
    export.py         --merge_export: a plain model with the adapter merged in
    modelcard.py      model cards of saved adapters and merged exports
    tracking.py       --report_to: TensorBoard and W&B
    headed_file.py    the caches' file layout: a JSON header, one raw array, written atomically, CRC-checked
    cache_files.py    every cache's atomic write and the one rule that removes killed writers' temporary files
    inputs/           the input pipeline: train images decoded once, augmentation, sampler, loaders,
                      test images preprocessed once and cached
    baselines/        the field's baselines on the frozen base (zero-shot ensembles, linear probe, LP++,
                      Tip-Adapter(-F), CLIP-Adapter, CoOp), their frozen-feature cache (its __init__ maps it)

The training loop is trainer.py and accuracy from counts metrics.py, at the top level.
"""
import logging

# bitsandbytes on AVX512-BF16 CPUs reports at import that an optional kernel from the Hugging Face
# hub is missing and falls back to its built-in one, which is what we want offline. The package
# quiets it before any of its modules can import bitsandbytes (through peft or transformers).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
