"""Datasets: readers for IDX (Fashion-MNIST, MNIST), CIFAR pickles, image folders and sklearn
digits; batched augmentation; batching. See ``load_dataset`` and ``dataset_info``."""

from fastad.data.augment import augment, normalize, to_float
from fastad.data.dataset import ImageDataset, iterate_batches, load_dataset
from fastad.data.info import DATASETS, DatasetInfo, dataset_info, dataset_names

__all__ = ["DATASETS", "DatasetInfo", "ImageDataset", "augment", "dataset_info", "dataset_names",
           "iterate_batches", "load_dataset", "normalize", "to_float"]
