"""CLIP's published prompt templates, as data: the 80 ImageNet templates and the per-dataset sets.

Source: OpenAI's CLIP repository (github.com/openai/CLIP, commit d05afc4): the ImageNet set from
`notebooks/Prompt_Engineering_for_ImageNet.ipynb` (`imagenet_templates`), the other datasets' sets
from `data/prompts.md` (the templates behind the zero-shot scores of Radford et al., ICML 2021, Table 9), copied
verbatim, typos included ("a example of", "a origami"), since the published zero-shot numbers used them.
ImageNet's variants use the ImageNet set, as CLIP's paper does. Datasets CLIP has no set for
(fashion_mnist, your own folder) use the ImageNet set for `zs_ensemble_dataset`, and say so.
"""
from __future__ import annotations

# notebooks/Prompt_Engineering_for_ImageNet.ipynb
IMAGENET_80 = (
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

# data/prompts.md, by CLIP's section name: our dataset name
DATASET_SETS: dict[str, tuple[str, ...]] = {
    # Caltech101
    'caltech101': (
        'a photo of a {}.',
        'a painting of a {}.',
        'a plastic {}.',
        'a sculpture of a {}.',
        'a sketch of a {}.',
        'a tattoo of a {}.',
        'a toy {}.',
        'a rendition of a {}.',
        'a embroidered {}.',
        'a cartoon {}.',
        'a {} in a video game.',
        'a plushie {}.',
        'a origami {}.',
        'art of a {}.',
        'graffiti of a {}.',
        'a drawing of a {}.',
        'a doodle of a {}.',
        'a photo of the {}.',
        'a painting of the {}.',
        'the plastic {}.',
        'a sculpture of the {}.',
        'a sketch of the {}.',
        'a tattoo of the {}.',
        'the toy {}.',
        'a rendition of the {}.',
        'the embroidered {}.',
        'the cartoon {}.',
        'the {} in a video game.',
        'the plushie {}.',
        'the origami {}.',
        'art of the {}.',
        'graffiti of the {}.',
        'a drawing of the {}.',
        'a doodle of the {}.',
    ),
    # DescribableTextures
    'dtd': (
        'a photo of a {} texture.',
        'a photo of a {} pattern.',
        'a photo of a {} thing.',
        'a photo of a {} object.',
        'a photo of the {} texture.',
        'a photo of the {} pattern.',
        'a photo of the {} thing.',
        'a photo of the {} object.',
    ),
    # EuroSAT
    'eurosat': (
        'a centered satellite photo of {}.',
        'a centered satellite photo of a {}.',
        'a centered satellite photo of the {}.',
    ),
    # FGVCAircraft
    'fgvc': (
        'a photo of a {}, a type of aircraft.',
        'a photo of the {}, a type of aircraft.',
    ),
    # Flowers102
    'oxford_flowers': (
        'a photo of a {}, a type of flower.',
    ),
    # Food101
    'food101': (
        'a photo of {}, a type of food.',
    ),
    # OxfordPets
    'oxford_pets': (
        'a photo of a {}, a type of pet.',
    ),
    # StanfordCars
    'stanford_cars': (
        'a photo of a {}.',
        'a photo of the {}.',
        'a photo of my {}.',
        'i love my {}!',
        'a photo of my dirty {}.',
        'a photo of my clean {}.',
        'a photo of my new {}.',
        'a photo of my old {}.',
    ),
    # SUN397
    'sun397': (
        'a photo of a {}.',
        'a photo of the {}.',
    ),
    # UCF101
    'ucf101': (
        'a photo of a person {}.',
        'a video of a person {}.',
        'a example of a person {}.',
        'a demonstration of a person {}.',
        'a photo of the person {}.',
        'a video of the person {}.',
        'a example of the person {}.',
        'a demonstration of the person {}.',
        'a photo of a person using {}.',
        'a video of a person using {}.',
        'a example of a person using {}.',
        'a demonstration of a person using {}.',
        'a photo of the person using {}.',
        'a video of the person using {}.',
        'a example of the person using {}.',
        'a demonstration of the person using {}.',
        'a photo of a person doing {}.',
        'a video of a person doing {}.',
        'a example of a person doing {}.',
        'a demonstration of a person doing {}.',
        'a photo of the person doing {}.',
        'a video of the person doing {}.',
        'a example of the person doing {}.',
        'a demonstration of the person doing {}.',
        'a photo of a person during {}.',
        'a video of a person during {}.',
        'a example of a person during {}.',
        'a demonstration of a person during {}.',
        'a photo of the person during {}.',
        'a video of the person during {}.',
        'a example of the person during {}.',
        'a demonstration of the person during {}.',
        'a photo of a person performing {}.',
        'a video of a person performing {}.',
        'a example of a person performing {}.',
        'a demonstration of a person performing {}.',
        'a photo of the person performing {}.',
        'a video of the person performing {}.',
        'a example of the person performing {}.',
        'a demonstration of the person performing {}.',
        'a photo of a person practicing {}.',
        'a video of a person practicing {}.',
        'a example of a person practicing {}.',
        'a demonstration of a person practicing {}.',
        'a photo of the person practicing {}.',
        'a video of the person practicing {}.',
        'a example of the person practicing {}.',
        'a demonstration of the person practicing {}.',
    ),
}
for _name in ('imagenet', 'imagenetv2', 'imagenet_sketch', 'imagenet_a', 'imagenet_r'):
    DATASET_SETS[_name] = IMAGENET_80

TEMPLATE_SETS = ("imagenet", "dataset")  # zs_ensemble_imagenet, zs_ensemble_dataset


def template_set(kind: str, dataset: str) -> tuple[str, tuple[str, ...]]:
    """(its name for the results line, the templates) of a template set for a dataset."""
    if kind == "imagenet":
        return "clip-imagenet-80", IMAGENET_80
    if dataset in DATASET_SETS:
        templates = DATASET_SETS[dataset]
        return (f"clip-{dataset}-{len(templates)}" if templates is not IMAGENET_80 else "clip-imagenet-80"), templates
    return "clip-imagenet-80 (CLIP has no set for this dataset)", IMAGENET_80
