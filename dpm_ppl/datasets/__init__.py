"""Data sets: the `Dataset` base class and its split, the paper's synthetic data, your own files, and images.

Nothing is downloaded: synthetic data come from a seed, files from paths the user gives, and image data from
what is installed (`DataNotInstalled` says how to install it).
"""

from .._checks import check_binary as check_binary
from .._checks import check_data as check_data
from ._base import Dataset as Dataset
from ._base import Split as Split
from ._base import Standardiser as Standardiser
from ._base import validation_indices as validation_indices
from ._files import FileData as FileData
from ._files import read_csv as read_csv
from ._images import MNIST as MNIST
from ._images import Cifar10 as Cifar10
from ._images import DataNotInstalled as DataNotInstalled
from ._images import DeadLeaves as DeadLeaves
from ._images import Digits as Digits
from ._images import FashionMNIST as FashionMNIST
from ._images import ImageData as ImageData
from ._images import Textures as Textures
from ._synthetic import BinaryHeartbeat as BinaryHeartbeat
from ._synthetic import SwissRoll as SwissRoll
