"""The input pipeline: from few-shot items to normalised tensors on the device.

    train_images.py  the train images, decoded once into one shared uint8 buffer (or per read, above a budget)
    augment.py       the random resized crop and flip on uint8 tensors, drawn by torchvision's law
    sampler.py       the training batches: epochs, short batches, micro-batches, ranks, augmentation seeds
    loaders.py       the train stream and the evaluation batches, uint8 until normalised on the device
    test_images.py   the test images, preprocessed once and cached on disk across a sweep's runs
"""
