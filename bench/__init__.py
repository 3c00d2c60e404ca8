"""The benchmark: what training, evaluation, the weights and the input pipeline cost, per method.

`python bench.py` is the entry point (bench/cli.py reads its flags). One module per concern:

    settings.py        what one benchmark run measures (BenchSettings, InputSettings)
    cli.py             the flags, the presets, and which study a command runs
    gpu.py             the GPU preset and the figure its memory target needs
    suite.py           one benchmark run, in order: the step-time grid, footprints, studies, report
    harness.py         the machine, the matmul peak, syncs and memory release, loading a model
    flops.py           the FLOP count of one training step
    prompts.py         class prompts of a chosen token length; ImageNet's prompt-length spread
    step_time.py       one timed training step, one measured setting, the grid and its ratios
    padding.py         study: prompts padded to the longest one vs CLIP's 77 tokens
    classes.py         study: step time vs the number of classes
    imagenet_shaped.py study: 1,000 ImageNet-shaped prompts, the earlier text path vs the new one
                       (text once per update, shards, length buckets) per way of splitting a step
    footprint.py       weight footprints; study: the 4-bit dequantization cost
    dora_dropout.py    study: DoRA with PEFT's dropout vs dropout on the adapter branch only
    methods.py         study: every method the grid lacks, at its first setting (the GPU preset's)
    prompt_costs.py    `python -m bench.prompt_costs`: CoCoOp's B x C text passes against KgCoOp's C, measured and
                       extrapolated to ImageNet (docs/methods.md quotes it)
    input_pipeline.py  `python bench.py input`: decode + transform throughput of the real loaders
    report.py          the Markdown table and the files in bench_results/
    text_reference.py  the per-micro-batch text pass, the ImageNet-shaped study's reference (not used in training)
    eval_passes.py     `python -m bench.eval_passes`: one evaluation pass with and without the figures beyond the
                       accuracy (calibration, MCM scores, kept logits), timed, and the passes each makes

Every model comes from methods.interface.load_adapted, as main.py's does; every step is trainer.TrainStep
with the precision and protocol constants main.py's run uses; only the images are random, and the weights are random
checkpoints in the real shapes (tiny_clip.random_checkpoint_dir for CLIP's, tiny_backbones'
random_family_checkpoint_dir for the other families' base models), so nothing is downloaded.
"""
import qlora_clip  # noqa: F401,E402  first: the package quiets bitsandbytes' import-time notice
