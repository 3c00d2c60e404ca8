"""What `check_data.py --download` fetches for each dataset, as data.

One `Entry` per dataset: the files to fetch (`Remote`: the published file name, its sources in
order, the published MD5 where there is one) and where each lands under --root_path (`Place`:
the file itself, or one folder taken out of it when it is an archive). Targets are spelled with
the dataset modules' own constants (FOLDERS, IMAGE_DIR, SPLIT_FILE, ...), so the fetch lays out
exactly the folder the loader reads, under CoOp's folder names.

Sources and checksums, and where they were read:
- torchvision 0.29's dataset classes (`_URL`/`_MD5` of DTD and Food101, `_DATASET_URL`/`_DATASET_MD5`
  of SUN397, `_RESOURCES` of OxfordIIITPet, `_file_dict` of Flowers102, `_URL` of FGVCAircraft, the URLs
  and MD5s inside EuroSAT.download and Caltech101.download); tests/test_fetch_catalog.py checks they
  still agree;
- CoOp's DATASETS.md (KaiyangZhou/CoOp@ff61507): the Google Drive files of its split files,
  classnames.txt and UCF-101-midframes.zip, and the original Stanford Cars, ImageNet-V2 and SUN397 links;
- the variants' own pages: ImageNet-V2's README (the Hugging Face copy, modestyachts/ImageNetV2@0b0c3fe),
  ImageNet-Sketch's README (Hugging Face, then Google Drive, HaohanWang/ImageNet-Sketch@4d42800),
  ImageNet-A's and -R's READMEs (hendrycks/natural-adv-examples@0777070, hendrycks/imagenet-r@3131cac);
- the OOD sets of MCM's benchmark: the iNaturalist, SUN and Places samples from the MOS authors' links
  (deeplearning-wisc/large_scale_ood, README.md, "Out-of-distribution dataset"; each archive holds one
  folder of that name), laid out in MCM's ImageNet_OOD_dataset/ (datasets/ood_benchmark.py); Textures is
  DTD's own archive, its dtd/images/ laid out as ImageNet_OOD_dataset/dtd/images.
Files without a published checksum get theirs recorded on first download (checksums.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets import (caltech101, dtd, eurosat, fgvc, food101, imagenet, imagenet_a, imagenet_r, imagenet_sketch,
                      imagenet_variants, imagenetv2, ood_inaturalist, ood_places, ood_sun, ood_textures,
                      oxford_flowers, oxford_pets, stanford_cars, sun397, ucf101)

# Google Drive's direct-download endpoint; confirm=t skips the page Drive shows before a file it cannot
# scan for viruses (any file above about 100 MB). When Drive answers with a page anyway (a download quota
# exceeded), the transfer refuses it as a web page, and the error gives the file's page for a browser.
GOOGLE_DRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
GOOGLE_DRIVE_PAGE = "https://drive.google.com/file/d/{}/view"
COOP_GUIDE = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


@dataclass(frozen=True)
class Remote:
    """One published file: the name it is published under, where it can be fetched, its checksum."""
    name: str                 # the published file name; a --mirror serves it as BASE_URL/<name>
    urls: tuple[str, ...]     # the canonical source first, then known public mirrors
    md5: str | None = None    # the published MD5; None: recorded on first download (the lock file)
    page: str = ""            # where a person gets it by hand when no URL works: "download X (from <page>)"

    @property
    def is_archive(self) -> bool:
        return self.name.endswith((".tar", ".tar.gz", ".tgz", ".zip"))


@dataclass(frozen=True)
class Place:
    """Where a fetched file ends up under --root_path.

    A plain file is copied to `target`. From an archive, the folder `take` of the extracted tree
    becomes `target`; `inner` names an archive inside the archive to extract first (Caltech101's zip
    holds a tar.gz), and `take` is then a folder of that inner archive.
    """
    remote: Remote
    target: str
    take: str = ""
    inner: str = ""


@dataclass(frozen=True)
class Entry:
    """Everything one dataset needs on disk. `by_hand`: what cannot be fetched and how to get it ({root}: the root)."""
    name: str
    places: tuple[Place, ...]
    by_hand: str = ""


def google_drive(name: str, file_id: str) -> Remote:
    return Remote(name, (GOOGLE_DRIVE.format(file_id),), page=GOOGLE_DRIVE_PAGE.format(file_id))


def coop_split(module, file_id: str) -> Place:
    """One of CoOp's split_zhou_*.json files, beside the image folder (CoOp's DATASETS.md links each)."""
    return Place(google_drive(module.SPLIT_FILE, file_id), f"{module.FOLDERS[0]}/{module.SPLIT_FILE}")


def image_folder(module) -> str:
    return f"{module.FOLDERS[0]}/{module.IMAGE_DIR}"


def variant_folder(module) -> str:
    return f"{module.FOLDER}/{module.IMAGE_DIR}"


# CoOp's copy of ImageNet's 1,000 class names (Google Drive); the variants read it from their own folder.
CLASSNAMES = google_drive(imagenet_variants.CLASSNAMES_FILE, "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF")
VGG = "https://www.robots.ox.ac.uk/~vgg/data"
# DTD's archive: the dtd benchmark's images, and all of them are MCM's Textures OOD set.
DTD_ARCHIVE = Remote("dtd-r1.0.1.tar.gz", (f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz",),
                     "fff73e5086ae6bdbea199a49dfb8a4c1", f"{VGG}/dtd/")
# The MOS authors' 10,000-image samples of iNaturalist, SUN and Places; no checksum is published.
MOS = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
MOS_PAGE = "https://github.com/deeplearning-wisc/large_scale_ood"


def mos_sample(module, folder: str) -> Entry:
    """One of MOS's OOD samples: `<folder>.tar.gz` holds `<folder>/`, which becomes the set's folder in MCM's layout."""
    return Entry(module.NAME, (Place(Remote(f"{folder}.tar.gz", (f"{MOS}/{folder}.tar.gz",), page=MOS_PAGE),
                                     module.FOLDERS[0], take=folder),))


ENTRIES = (
    Entry("imagenet", (Place(CLASSNAMES, imagenet.CLASSNAMES_FILE),), by_hand=(
        "ImageNet's images cannot be fetched for you: its licence asks every user to register at "
        "https://image-net.org and download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there. "
        "Extract them as {root}/imagenet/images/train/<wnid>/*.JPEG and {root}/imagenet/images/val/<wnid>/*.JPEG "
        "(the validation images sorted into one folder per WordNet id) beside {root}/imagenet/classnames.txt, "
        "which is fetched; see DATASETS.md#imagenet")),
    Entry("caltech101", (
        coop_split(caltech101, "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
        # torchvision's Caltech101.download: the zip holds caltech-101/101_ObjectCategories.tar.gz.
        Place(Remote("caltech-101.zip", ("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",),
                     "3138e1922a9193bfa496528edbbc45d0", "https://data.caltech.edu/records/mzrjq-6wc02"),
              image_folder(caltech101), take=caltech101.IMAGE_DIR,
              inner="caltech-101/101_ObjectCategories.tar.gz"),
    )),
    Entry("oxford_pets", (
        coop_split(oxford_pets, "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        Place(Remote("images.tar.gz", (f"{VGG}/pets/data/images.tar.gz",), "5c4f3ee8e5d25df40f4fd59a7f44e54c",
                     f"{VGG}/pets/"),
              image_folder(oxford_pets), take="images"),
    )),
    Entry("stanford_cars", (
        coop_split(stanford_cars, "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
        # Dead since 2023 (pytorch/vision#7545, CoOp#61) and no public copy keeps the original file names
        # in these archives: tried, they fail with the manual steps; a --mirror that serves them works.
        *(Place(Remote(f"{part}.tgz", (f"http://ai.stanford.edu/~jkrause/car196/{part}.tgz",),
                       page="a copy: the original is gone, DATASETS.md#stanford_cars lists what people use"),
                f"{stanford_cars.FOLDERS[0]}/{part}", take=part) for part in ("cars_train", "cars_test")),
    )),
    Entry("oxford_flowers", (
        coop_split(oxford_flowers, "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        Place(Remote("102flowers.tgz", (f"{VGG}/flowers/102/102flowers.tgz",), "52808999861908f626f3c1f4e79d11fa",
                     f"{VGG}/flowers/102/"),
              image_folder(oxford_flowers), take="jpg"),
    )),
    Entry("food101", (
        coop_split(food101, "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
        Place(Remote("food-101.tar.gz", ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",),
                     "85eeb15f3717b99a5da872d97d918f87", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
              image_folder(food101), take="food-101/images"),
    )),
    Entry("fgvc", (
        # The archive's data/ folder holds the images and the split lists: it is the dataset folder.
        Place(Remote("fgvc-aircraft-2013b.tar.gz", (f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",),
                     page=f"{VGG}/fgvc-aircraft/"),
              fgvc.FOLDERS[0], take="fgvc-aircraft-2013b/data"),
    )),
    Entry("sun397", (
        coop_split(sun397, "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
        # Dead since 2025 (pytorch/vision#9348, CoOp#90); kept so that a copy with this MD5 is recognised.
        Place(Remote("SUN397.tar.gz", ("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",),
                     "8ca2778205c41d23104230ba66911c7a",
                     "a copy: the original is gone, DATASETS.md#sun397 says what to look for"),
              image_folder(sun397), take="SUN397"),
    )),
    Entry("dtd", (
        coop_split(dtd, "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        Place(DTD_ARCHIVE, image_folder(dtd), take="dtd/images"),
    )),
    Entry("eurosat", (
        coop_split(eurosat, "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
        # torchvision's copy on the Hugging Face Hub first (a pinned revision), then the authors' original.
        Place(Remote("EuroSAT.zip", (
            "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
            "EuroSAT.zip", "http://madm.dfki.de/files/sentinel/EuroSAT.zip"),
            "c8fa014336c82ac7804f0398fcb19387", "https://github.com/phelber/EuroSAT"),
              image_folder(eurosat), take="2750"),
    )),
    Entry("ucf101", (
        coop_split(ucf101, "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        Place(google_drive("UCF-101-midframes.zip", "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),
              image_folder(ucf101), take=ucf101.IMAGE_DIR),
    )),
    Entry("imagenetv2", (
        Place(CLASSNAMES, f"{imagenetv2.FOLDER}/{imagenet_variants.CLASSNAMES_FILE}"),
        Place(Remote("imagenetv2-matched-frequency.tar.gz", (
            "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
            "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz"),
            page="https://github.com/modestyachts/ImageNetV2"),
              variant_folder(imagenetv2), take=imagenetv2.IMAGE_DIR),
    )),
    Entry("imagenet_sketch", (
        Place(CLASSNAMES, f"{imagenet_sketch.FOLDER}/{imagenet_variants.CLASSNAMES_FILE}"),
        Place(Remote("ImageNet-Sketch.zip", (
            "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
            GOOGLE_DRIVE.format("1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA")),
            page="https://github.com/HaohanWang/ImageNet-Sketch"),
              variant_folder(imagenet_sketch), take="sketch"),
    )),
    Entry("imagenet_a", (
        Place(CLASSNAMES, f"{imagenet_a.FOLDER}/{imagenet_variants.CLASSNAMES_FILE}"),
        Place(Remote("imagenet-a.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",),
                     page="https://github.com/hendrycks/natural-adv-examples"),
              variant_folder(imagenet_a), take=imagenet_a.IMAGE_DIR),
    )),
    Entry("imagenet_r", (
        Place(CLASSNAMES, f"{imagenet_r.FOLDER}/{imagenet_variants.CLASSNAMES_FILE}"),
        Place(Remote("imagenet-r.tar", ("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",),
                     page="https://github.com/hendrycks/imagenet-r"),
              variant_folder(imagenet_r), take=imagenet_r.IMAGE_DIR),
    )),
    mos_sample(ood_inaturalist, "iNaturalist"),
    mos_sample(ood_sun, "SUN"),
    mos_sample(ood_places, "Places"),
    # Fetched only when neither MCM's layout nor the dtd benchmark's DATA/dtd/images (which ood_textures also
    # reads) is there: check_data.py --download fetches what its check does not accept.
    Entry("ood_textures", (Place(DTD_ARCHIVE, ood_textures.FOLDERS[0], take="dtd/images"),)),
)

# --download NAME: every dataset with an entry, in the order of datasets.DATASET_NAMES.
CATALOG: dict[str, Entry] = {entry.name: entry for entry in ENTRIES}
