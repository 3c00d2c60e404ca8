"""What the training loop (trainer.py, at the top level) is built from.

    precision.py      compute dtype, autocast and gradient scaler, decided once
    distributed.py    data-parallel gradient and count sums, the text shares' gather, under accelerate launch
    memory.py         peak memory (CUDA allocator, or the CPU's resident set)
    losses.py         --loss: cross-entropy over the classes, SigLIP's sigmoid loss
    text_pass.py      the training step's text pass: once per optimizer step, sharded over processes
    checkpointing.py  --checkpoint_every / --resume: the whole training state
    optimization.py   a method's recipe as data: optimizer, schedule, batches, length (CLIP-LoRA's; Dassl's)
"""
