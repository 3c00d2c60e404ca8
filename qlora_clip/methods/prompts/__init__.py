"""The prompt learners of the base-to-novel tables, trained through the shared loop on the frozen (or 4-bit) base
(methods/table.py entries of kind "prompt"; CoOp, fitted on cached features, is a baseline: baselines/coop.py).

    context.py    the learned context in the text tower's input: the class prompts, its place, the insertion hook
    deep.py       deep prompts in the first J layers of both towers (MaPLe, PromptSRC), switched on per pass
    learner.py    PromptLearning: what they share as methods (tokens beside the base, prompts per class list,
                  zero-shot view with the tokens off, save and load, the record)
    cocoop.py     CoCoOp: CoOp's context plus a meta-net's token from each image (it owns its logits)
    kgcoop.py     KgCoOp: CoOp's context plus a term toward the hand-crafted class embeddings
    maple.py      MaPLe: deep text prompts and their couplings to the vision prompts of the same layers
    promptsrc.py  PromptSRC: independent deep prompts, agreement losses with the frozen model, Gaussian averaging
"""
