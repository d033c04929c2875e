"""Data shared by ``zoo eval`` and ``zoo finetune``: image-file discovery and seeded stratified subsets.

- :mod:`zoo.data.files`: which files are images (``zoo.constants.IMAGE_EXTENSIONS``) and the one scanner;
- :mod:`zoo.data.subsets`: seeded, class-stratified splits and samples.
"""

from zoo.data.files import image_files, is_image_file
from zoo.data.subsets import DatasetError, stratified_sample, stratified_split

__all__ = ["DatasetError", "image_files", "is_image_file", "stratified_sample", "stratified_split"]
