"""Real digits, cut small: the data of tests that train a method's recipe for a few epochs."""

from __future__ import annotations

import dataclasses
import functools

from zoo_dataset.data import ImageData, load_dataset


@functools.cache
def small_digits(name: str = "digits", image_size: int = 28, data_dir=None) -> ImageData:
    """Real digits, cut to 100 training and 100 test images so that every epoch takes a blink."""
    data = load_dataset(name, image_size, data_dir)
    return dataclasses.replace(data, train_x=data.train_x[:100], train_y=data.train_y[:100],
                               test_x=data.test_x[:100], test_y=data.test_y[:100])
