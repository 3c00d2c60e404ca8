"""Fetching the benchmark datasets: `python check_data.py --download NAME ... --root_path DATA [--mirror URL]`.

    catalog.py    per dataset, as data: each file's published name, its sources in order (canonical
                  first), its published MD5, and where it lands under --root_path (the loaders' folders)
    checksums.py  the MD5 a file must have: the published one, or the one recorded on its first
                  download in ROOT/.qlora-clip-fetch.lock.json
    transfer.py   one file over HTTP: resumed with Range requests, retried, a byte progress bar,
                  a temporary name renamed once whole and verified; a wrong checksum kept aside
    unpack.py     an archive extracted into a temporary folder, the loader's folder renamed into place
    fetcher.py    one dataset: what is missing, fetched and laid out; what cannot be (ImageNet's
                  licence, a dead link, a checksum mismatch, a full disk) said with the manual steps

check_data.py decides what to fetch (the datasets its check does not accept) and checks the result.
"""
from .catalog import CATALOG, Entry, Place, Remote
from .fetcher import MIRROR_VARIABLE, WORK_FOLDER, FetchOutcome, fetch_dataset

__all__ = ["CATALOG", "MIRROR_VARIABLE", "WORK_FOLDER", "Entry", "FetchOutcome", "Place", "Remote", "fetch_dataset"]
