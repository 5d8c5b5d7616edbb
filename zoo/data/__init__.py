"""Datasets and Grain pipelines.

Data flows straight through: IDX bytes (:func:`read_idx`) -> in-memory ``uint8``
arrays (:class:`ArrayDataset`, from :func:`load_mnist` and friends, fetched and
verified by :func:`fetch`) -> Grain batches (:func:`train_pipeline`,
:func:`eval_pipeline`) -> the device.
"""

from ._augment import (
    Compose as Compose,
    RandomCrop as RandomCrop,
    RandomErasing as RandomErasing,
    RandomFlip as RandomFlip,
    RandomShift as RandomShift,
)
from ._batch import Batch as Batch, Chunk as Chunk
from ._cifar import (
    CIFAR10_CLASS_NAMES as CIFAR10_CLASS_NAMES,
    load_cifar10 as load_cifar10,
)
from ._datasets import (
    DATASET_NAMES as DATASET_NAMES,
    DIGIT_CLASS_NAMES as DIGIT_CLASS_NAMES,
    FASHION_MNIST_CLASS_NAMES as FASHION_MNIST_CLASS_NAMES,
    ArrayDataset as ArrayDataset,
    load_dataset as load_dataset,
    load_fashion_mnist as load_fashion_mnist,
    load_mnist as load_mnist,
    load_toy as load_toy,
)
from ._device_augment import (
    AbstractDeviceAugment as AbstractDeviceAugment,
    DeviceCompose as DeviceCompose,
    DeviceCrop as DeviceCrop,
    DeviceErasing as DeviceErasing,
    DeviceFlip as DeviceFlip,
    DeviceShift as DeviceShift,
)
from ._device_batch import (
    augment_batch as augment_batch,
    draw_batch as draw_batch,
    to_device_augment as to_device_augment,
)
from ._device_chunks import (
    AnyChunk as AnyChunk,
    AugmentedChunk as AugmentedChunk,
    IndexedChunk as IndexedChunk,
)
from ._download import (
    default_data_dir as default_data_dir,
    fetch as fetch,
)
from ._idx import DataError as DataError, read_idx as read_idx
from ._pipeline import (
    eval_pipeline as eval_pipeline,
    steps_per_epoch as steps_per_epoch,
    train_pipeline as train_pipeline,
)
from ._preprocess import (
    IMAGENET_MEAN as IMAGENET_MEAN,
    IMAGENET_STD as IMAGENET_STD,
    Preprocessing as Preprocessing,
    preprocess as preprocess,
)
