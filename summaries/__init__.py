"""The tables and the plot of `summarize.py`, built from results files. One module per concern:

    records.py     reading results files; which dataset (its identity: each image folder its own), method
                   (with the device kind and precision where they differ), zero-shot row and protocol
                   each record is: the one place that decides which lines share a cell
    cells.py       a cell (one method on one dataset, by seed), the row it is in, the row's average, and
                   their HM counterparts for base-to-novel
    output.py      Markdown tables for stdout, CSV files for --out
    fewshot.py     the paper's table: method x shots by dataset
    efficiency.py  training time, peak memory and footprint beside the accuracy
    methods.py     every method side by side: parameters, size, footprint, time, memory, accuracy (--sort)
    plot.py        average accuracy vs shots, optionally with the published CLIP-LoRA line
    base2new.py    base / new / HM by dataset, and the published averages
    transfer.py    cross-dataset transfer and domain generalization, from runs with --eval_datasets

Nothing here imports torch or the sweep: summarizing stays cheap enough to run anywhere.
"""
