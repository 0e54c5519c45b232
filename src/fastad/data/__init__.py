"""Datasets: readers for IDX (Fashion-MNIST, MNIST), CIFAR pickles, image folders and sklearn
digits; batched augmentation; batching. See ``load_dataset`` and ``dataset_info``."""

from fastad.data.augment import augment, normalize, to_float, view_count
from fastad.data.dataset import ImageDataset, dataset_info, iterate_batches, load_dataset, load_eval_split
from fastad.data.info import DATASETS, DatasetInfo, dataset_names
from fastad.data.view import make_view

__all__ = ["DATASETS", "DatasetInfo", "ImageDataset", "augment", "dataset_info", "dataset_names",
           "iterate_batches", "load_dataset", "load_eval_split", "make_view", "normalize", "to_float", "view_count"]
