"""What a dataset is, whatever reads it from disk (the modules of datasets/ at the top level).

    items.py     labelled items, a dataset's fixed split and published sizes, the few-shot view, class prompts
    images.py    opening an image file as 8-bit RGB, naming the file when it cannot be; the pixel limit
    settings.py  the data flags (DataConfig) and the names of the datasets they choose from
"""
