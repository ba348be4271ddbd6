"""TFDS builders for the image-fusion datasets, built from a manual directory, without TensorFlow.

None of these datasets can be downloaded by a script (Google Drive, Baidu, figshare or plain
GitHub folders), so every builder reads a folder the user already has, its ``manual_dir``, in
either of two layouts:

* the dataset's own layout as distributed (given per builder below), or
* the layout of the project's staged data: ``<dataset>/<split>/<modality>/<name>.<ext>``, with
  ``manual_dir`` the folder holding ``<dataset>/`` or the ``<dataset>/`` folder itself. The
  samples shipped in the package (``fusionjax.data.sample_dir()``) use it too.

The builder tries the layouts in order and builds the splits found in the first one that
matches (``PairSpec.find_splits``).

Stored format: each example is a record (see ``fusionjax.data.io``) holding the two *encoded
image files as distributed* plus the pair name and the files' paths relative to
``manual_dir``. The pixels are decoded by the grain pipeline (``fusionjax.data.pipeline``) with
Pillow. Why bytes rather than ``tfds.features.Tensor(shape=(None, None, C))`` arrays:

* the channel count varies inside a modality (TNO and M3FD mix grey and RGB files, CDDFuse's
  Harvard sets store grey as RGB), and a Tensor feature needs a fixed C;
* 16-bit and float-TIFF sources keep their bit depth;
* PNG/JPEG is several times smaller than zlib-compressed raw pixels;
* reading a dataset and reading a folder then share one decoder, one colour conversion and
  one set of error messages.

Every pair is decoded once while building, so an unreadable file, an unsupported mode or a
size mismatch fails the build with a message naming the file.

Only array_record output is supported: TFDS's default tfrecord format and
``tfds.features.Image`` need TensorFlow, which fusionjax does not install. Read the result with
``data_source(name, split, data_dir)`` (what ``fusionjax.fuse`` and training read),
``tfds.data_source(name, split=..., data_dir=...)`` or ``builder.as_data_source(split)`` (this
module must have been imported so that the names are registered), or with
``tfds.builder_from_directory(path).as_data_source(split)``, which needs no builder code.

``img_a`` is always the grey modality (ir, mri, pc) and ``img_b`` the one that may carry colour
(vi, ct, pet, spect, gfp), the A/B order MambaDFuse and S4Fusion use. The modality names are
in ``builder.info.metadata``.
"""

import dataclasses
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from fusionjax.data import io

# The 50 RoadScene pairs that Zhaozixiang1228/MMIF-CDDFuse ships as test_img/RoadScene, the
# test split of docs/data.md's roadscene; RoadScene itself has no official split.
ROADSCENE_TEST_NAMES = frozenset(
  [
    f"FLIR_{number:05d}"
    for number in (
      211,
      977,
      1130,
      4269,
      4424,
      4484,
      4512,
      4593,
      4688,
      4722,
      4943,
      5005,
      5064,
      5105,
      5857,
      5879,
      5893,
      5914,
      5955,
      6282,
      6325,
      6392,
      6430,
      6506,
      6570,
      6795,
      6974,
      6993,
      6995,
      7190,
      7206,
      7209,
      7555,
      7732,
      7786,
      7809,
      7968,
      7970,
      8021,
      8058,
      8094,
      8202,
      8248,
      8284,
      8526,
      8592,
      8721,
      8858,
      9465,
    )
  ]
  + ["FLIR_video_02829"]
)


@dataclasses.dataclass(frozen=True)
class Folders:
  """Where one split's two modality folders are, relative to ``manual_dir``.

  Attributes:
    dir_a, dir_b: the folders of ``img_a`` and ``img_b``.
    prefix_a, prefix_b: removed from file stems to get pair names (``io.pair_folders``).
    only: if set, keep only these pair names (all must exist).
    exclude: drop these pair names.
  """

  dir_a: str
  dir_b: str
  prefix_a: str = ""
  prefix_b: str = ""
  only: frozenset[str] | None = None
  exclude: frozenset[str] = frozenset()

  def pairs(self, manual_dir: pathlib.Path) -> list[io.ImagePair]:
    """Pairs the two folders and applies ``only``/``exclude``."""
    pairs = io.pair_folders(
      manual_dir / self.dir_a,
      manual_dir / self.dir_b,
      prefix_a=self.prefix_a,
      prefix_b=self.prefix_b,
    )
    if self.only is not None:
      missing = self.only - {pair.name for pair in pairs}
      if missing:
        raise ValueError(f"{manual_dir / self.dir_a}: expected pairs not found: {sorted(missing)}")
      pairs = [pair for pair in pairs if pair.name in self.only]
    return [pair for pair in pairs if pair.name not in self.exclude]


Layout = Mapping[str, Folders]  # split name -> folders


def staged_layouts(
  dataset: str, splits: tuple[str, ...], modality_a: str, modality_b: str
) -> tuple[Layout, ...]:
  """``<dataset>/<split>/<modality>`` under ``manual_dir``, then ``<split>/<modality>``."""
  return tuple(
    {
      split: Folders(f"{root}{split}/{modality_a}", f"{root}{split}/{modality_b}")
      for split in splits
    }
    for root in (f"{dataset}/", "")
  )


@dataclasses.dataclass(frozen=True)
class PairSpec:
  """What a builder (or builder config) reads: its modalities and the layouts it accepts."""

  modality_a: str
  modality_b: str
  layouts: tuple[Layout, ...]

  def find_splits(self, manual_dir: pathlib.Path) -> dict[str, Folders]:
    """Returns the splits present in the first layout any of whose folders exist.

    A split is present when either of its folders exists (a missing partner folder then
    fails with a message naming it), so a folder holding only a test split builds it alone.
    """
    for layout in self.layouts:
      present = {
        split: folders
        for split, folders in layout.items()
        if (manual_dir / folders.dir_a).is_dir() or (manual_dir / folders.dir_b).is_dir()
      }
      if present:
        return present
    expected = "\n".join(
      "  " + ", ".join(f"{split}: {f.dir_a} + {f.dir_b}" for split, f in layout.items())
      for layout in self.layouts
    )
    raise FileNotFoundError(
      f"no known {self.modality_a}/{self.modality_b} layout in manual_dir {manual_dir}; "
      f"expected one of these sets of folders:\n{expected}"
    )


@dataclasses.dataclass(eq=False)
class PairConfig(tfds.core.BuilderConfig):
  """Builder config of a family with several pair sets (``Harvard``)."""

  spec: PairSpec | None = None


class _PairedImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared body: subclasses set ``SPEC`` (or ``BUILDER_CONFIGS`` of ``PairConfig``),
  ``HOMEPAGE``, ``CITATION`` and ``MANUAL_DOWNLOAD_INSTRUCTIONS``."""

  VERSION = tfds.core.Version("1.0.0")
  SPEC: ClassVar[PairSpec]
  HOMEPAGE: ClassVar[str]
  CITATION: ClassVar[str]

  @property
  def spec(self) -> PairSpec:
    return self.builder_config.spec if self.builder_config else self.SPEC

  def _info(self) -> tfds.core.DatasetInfo:
    encoded = "the {} image file as distributed (PNG, JPEG, BMP or TIFF bytes)"
    path = "path of the {} file relative to manual_dir"
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.__doc__,
      features=tfds.features.FeaturesDict(
        {
          "name": tfds.features.Text(doc="pair name (the file stem)"),
          "file_a": tfds.features.Tensor(
            shape=(), dtype=np.object_, doc=encoded.format(self.spec.modality_a)
          ),
          "file_b": tfds.features.Tensor(
            shape=(), dtype=np.object_, doc=encoded.format(self.spec.modality_b)
          ),
          "path_a": tfds.features.Text(doc=path.format(self.spec.modality_a)),
          "path_b": tfds.features.Text(doc=path.format(self.spec.modality_b)),
        }
      ),
      homepage=self.HOMEPAGE,
      citation=self.CITATION,
      metadata=tfds.core.MetadataDict(
        modality_a=self.spec.modality_a, modality_b=self.spec.modality_b
      ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    # Pair every split before writing any, so that layout errors surface first.
    pairs = {
      split: folders.pairs(manual_dir)
      for split, folders in self.spec.find_splits(manual_dir).items()
    }
    empty = [split for split, split_pairs in pairs.items() if not split_pairs]
    if empty:
      logging.warning("%s: no pairs for splits %s; they are not built", manual_dir, empty)
    return {
      split: self._generate_examples(manual_dir, split_pairs)
      for split, split_pairs in pairs.items()
      if split_pairs
    }

  def _generate_examples(
    self, manual_dir: pathlib.Path, pairs: list[io.ImagePair]
  ) -> Iterator[tuple[str, dict]]:
    source = io.PairedFolderSource(pairs)
    for index in range(len(source)):
      record = source[index]
      io.decode_pair(record)  # fail the build on an unreadable or mismatched pair
      for key in ("path_a", "path_b"):
        record[key] = str(pathlib.Path(record[key]).relative_to(manual_dir))
      yield record["name"], record


def get_builder(name: str, data_dir: str | pathlib.Path | None = None) -> tfds.core.DatasetBuilder:
  """The builder of dataset ``name`` ("roadscene", "harvard/pet_mri", ...), writing and
  reading array_record in ``data_dir`` (None: TFDS's default folder).

  Raises:
    tfds.core.registered.DatasetNotFoundError (a ValueError): no dataset of that name.
  """
  return tfds.builder(
    name, data_dir=None if data_dir is None else str(data_dir), file_format="array_record"
  )


def prepare(
  name: str, *, manual_dir: str | pathlib.Path, data_dir: str | pathlib.Path
) -> tfds.core.DatasetBuilder:
  """Builds dataset ``name`` ("roadscene", "harvard/pet_mri", ...) as array_record.

  Returns the builder; read it with ``builder.as_data_source(split)``.
  """
  builder = get_builder(name, data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def data_source(
  name: str,
  split: str,
  data_dir: str | pathlib.Path,
  *,
  manual_dir: str | pathlib.Path | None = None,
) -> Sequence[dict]:
  """The records (``fusionjax.data.io``) of split ``split`` of dataset ``name`` prepared in
  ``data_dir``; built there first from ``manual_dir`` (``prepare``) when that is given.
  ``split`` is a split name or a TFDS split expression ("test[:10]").

  Raises:
    tfds.core.registered.DatasetNotFoundError (a ValueError): no dataset of that name.
    FileNotFoundError: the dataset is not prepared in ``data_dir`` and no ``manual_dir``.
    ValueError: the dataset has no such split.
  """
  if manual_dir:
    builder = prepare(name, manual_dir=manual_dir, data_dir=data_dir)
  else:
    builder = get_builder(name, data_dir)
    if not builder.is_prepared():
      raise FileNotFoundError(
        f"dataset {name!r} is not prepared in data_dir {data_dir}; build it there from "
        "the raw pairs first (fusionjax.data.builders.prepare; data.manual_dir in a run "
        "config)"
      )
  try:
    return builder.as_data_source(split)
  except ValueError as error:  # TFDS's message names the split and those there are
    raise ValueError(f"dataset {name!r} in {data_dir}: {error}") from error


class Msrs(_PairedImageBuilder):
  """MSRS (Multi-Spectral Road Scenarios), infrared-visible: 1,083 train and 361 test pairs,
  480x640, from MFNet, with enhanced IR. Source: https://github.com/Linfeng-Tang/MSRS; cite
  PIAFusion (Tang et al., Information Fusion 2022). Check the repository for its terms."""

  name = "msrs"
  SPEC = PairSpec("ir", "vi", staged_layouts("msrs", ("train", "test"), "ir", "vi"))
  HOMEPAGE = "https://github.com/Linfeng-Tang/MSRS"
  CITATION = "Tang et al., PIAFusion, Information Fusion 83-84:79-92, 2022."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Clone or download https://github.com/Linfeng-Tang/MSRS and pass its root as manual_dir: it
    holds train/ir, train/vi, test/ir and test/vi with identically named PNGs.
    """


class RoadScene(_PairedImageBuilder):
  """RoadScene, infrared-visible: 221 aligned pairs of FLIR ADAS frames, sizes vary, JPEG.
  Source: https://github.com/hanna-xu/RoadScene (no licence file; the README asks to cite
  FusionDN, AAAI 2020, or U2Fusion, TPAMI 2020). Splits: ``test`` is the 50 pairs that
  MMIF-CDDFuse evaluates on (``ROADSCENE_TEST_NAMES``), ``train`` the other 171."""

  name = "roadscene"
  SPEC = PairSpec(
    "ir",
    "vi",
    (
      *staged_layouts("roadscene", ("train", "test"), "ir", "vi"),
      {
        "train": Folders("cropinfrared", "crop_LR_visible", exclude=ROADSCENE_TEST_NAMES),
        "test": Folders("cropinfrared", "crop_LR_visible", only=ROADSCENE_TEST_NAMES),
      },
      {"test": Folders("ir", "vi")},
    ),
  )
  HOMEPAGE = "https://github.com/hanna-xu/RoadScene"
  CITATION = "Xu et al., U2Fusion, IEEE TPAMI 44(1):502-518, 2022; FusionDN, AAAI 2020."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Clone https://github.com/hanna-xu/RoadScene and pass its root as manual_dir; the aligned
    pairs are cropinfrared/FLIR_*.jpg and crop_LR_visible/FLIR_*.jpg (crop_HR_visible is not
    aligned and is not used). A folder with only ir/ and vi/ (MMIF-CDDFuse's
    test_img/RoadScene) builds the test split alone.
    """


class Tno(_PairedImageBuilder):
  """TNO Image Fusion Dataset (A. Toet), infrared-visible night-vision scenes, grey, CC BY
  4.0, https://figshare.com/articles/dataset/TNO_Image_Fusion_Dataset/1008029. Papers
  evaluate on curated subsets of 20-42 pairs; only a ``test`` split is built. Kept out of
  training and tuning in this project as an unseen evaluation set."""

  name = "tno"
  SPEC = PairSpec(
    "ir",
    "vi",
    (
      *staged_layouts("tno", ("test",), "ir", "vi"),
      {"test": Folders("ir", "vi")},
    ),
  )
  HOMEPAGE = "https://figshare.com/articles/dataset/TNO_Image_Fusion_Dataset/1008029"
  CITATION = "A. Toet, The TNO Multiband Image Data Collection, Data in Brief 15:249-251, 2017."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the TNO Image Fusion Dataset from figshare (CC BY 4.0). Its scenes are nested
    folders with scene-specific file names, so put the pairs you evaluate into ir/ and vi/
    with matching names, as fusion repositories ship them (e.g. MMIF-CDDFuse test_img/TNO),
    and pass that folder as manual_dir.
    """


class M3fd(_PairedImageBuilder):
  """M3FD fusion subset (TarDAL, CVPR 2022), infrared-visible: 300 pairs, 1024x768. Source:
  https://github.com/JinyuanLiu-CV/TarDAL (M3FD_Fusion.zip, linked from its README). Only a
  ``test`` split is built; kept out of training and tuning in this project as an unseen
  evaluation set."""

  name = "m3fd"
  SPEC = PairSpec(
    "ir",
    "vi",
    (
      *staged_layouts("m3fd", ("test",), "ir", "vi"),
      {"test": Folders("Ir", "Vis")},
      {"test": Folders("M3FD_Fusion/Ir", "M3FD_Fusion/Vis")},
    ),
  )
  HOMEPAGE = "https://github.com/JinyuanLiu-CV/TarDAL"
  CITATION = "Liu et al., TarDAL, CVPR 2022."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download M3FD_Fusion.zip from the links in https://github.com/JinyuanLiu-CV/TarDAL, unzip
    it and pass the folder holding Ir/ and Vis/ (or M3FD_Fusion/) as manual_dir.
    """


def _harvard_task(modality: str) -> PairConfig:
  """xianming-gu's split of one AANLIB task: MyDatasets/<MOD>-MRI/{train,test}/{MRI,<MOD>}."""
  upper = modality.upper()
  return PairConfig(
    name=f"{modality}_mri",
    description=f"Harvard AANLIB {upper}-MRI pairs, xianming-gu's train/test split.",
    spec=PairSpec(
      "mri",
      modality,
      (
        *staged_layouts(f"harvard_{modality}_mri", ("train", "test"), "mri", modality),
        *(
          {
            split: Folders(f"{root}{upper}-MRI/{split}/MRI", f"{root}{upper}-MRI/{split}/{upper}")
            for split in ("train", "test")
          }
          for root in ("MyDatasets/", "")
        ),
      ),
    ),
  )


def _harvard_cddfuse(modality: str) -> PairConfig:
  """The test set MMIF-CDDFuse ships as test_img/MRI_<MOD>/{MRI,<MOD>}."""
  folder = f"MRI_{modality.upper()}"
  return PairConfig(
    name=f"cddfuse_{modality}_mri",
    description=f"Harvard AANLIB {modality.upper()}-MRI test set bundled with CDDFuse.",
    spec=PairSpec(
      "mri",
      modality,
      (
        *staged_layouts(f"harvard_cddfuse_{modality}_mri", ("test",), "mri", modality),
        *(
          {"test": Folders(f"{root}{folder}/MRI", f"{root}{folder}/{modality.upper()}")}
          for root in ("test_img/", "")
        ),
      ),
    ),
  )


class Harvard(_PairedImageBuilder):
  """Harvard Whole Brain Atlas (AANLIB, http://www.med.harvard.edu/AANLIB/home.html) medical
  pairs, 256x256, MRI with CT (grey), PET or SPECT (pseudo-colour RGB). Configs:

  * ``ct_mri``, ``pet_mri``, ``spect_mri``:
    https://github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets (no licence file;
    the README asks to follow or cite ASFE-Fusion), with its train/test split (24 test pairs
    per task).
  * ``cddfuse_ct_mri``, ``cddfuse_pet_mri``, ``cddfuse_spect_mri``: the 21/42/73-pair test
    sets of https://github.com/Zhaozixiang1228/MMIF-CDDFuse (cite CDDFuse, CVPR 2023), which
    CDDFuse, EMMA and DDFM report on. Test split only.

  Leakage: every cddfuse_ct_mri pair and 31 cddfuse_spect_mri pairs are near-duplicates of
  xianming-gu pairs, most of them in its train split (docs/data.md lists them); a
  model trained on ``*_mri`` train must not be scored on those as unseen data."""

  name = "harvard"
  BUILDER_CONFIGS = [
    *(_harvard_task(modality) for modality in ("ct", "pet", "spect")),
    *(_harvard_cddfuse(modality) for modality in ("ct", "pet", "spect")),
  ]
  HOMEPAGE = "http://www.med.harvard.edu/AANLIB/home.html"
  CITATION = "K. A. Johnson, J. A. Becker, The Whole Brain Atlas, Harvard Medical School."
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    For ct_mri, pet_mri, spect_mri: clone
    https://github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets and pass its root (with
    MyDatasets/CT-MRI/{train,test}/{CT,MRI} etc.) as manual_dir. For cddfuse_*: clone
    https://github.com/Zhaozixiang1228/MMIF-CDDFuse and pass its root (with
    test_img/MRI_CT/{CT,MRI} etc.) as manual_dir.
    """


class GfpPc(_PairedImageBuilder):
  """Green fluorescent protein (RGB) / phase contrast (grey) microscopy pairs, 358x358: the
  DPCN-Fusion test images (Tang et al., IEEE TCI 7:584-597, 2021), "free for research
  purposes only", as bundled in https://github.com/MorvanLi/image-fusion-zoom. Only 5 pairs
  are publicly fetchable; ``test`` split only."""

  name = "gfp_pc"
  SPEC = PairSpec(
    "pc",
    "gfp",
    (
      *staged_layouts("gfp_pc", ("test",), "pc", "gfp"),
      *(
        {"test": Folders(f"{root}Test_pci", f"{root}Test_gfp", prefix_a="PCI_", prefix_b="GFP_")}
        for root in ("Medical_Image_Fusion_Methods/DPCN-Fusion/", "")
      ),
    ),
  )
  HOMEPAGE = "https://github.com/MorvanLi/image-fusion-zoom"
  CITATION = (
    "W. Tang, Y. Liu, J. Cheng, C. Li, X. Chen, Green Fluorescent Protein and Phase Contrast"
    " Image Fusion via Detail Preserving Cross Network, IEEE TCI 7:584-597, 2021."
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Clone https://github.com/MorvanLi/image-fusion-zoom and pass its root as manual_dir (the
    pairs are Medical_Image_Fusion_Methods/DPCN-Fusion/Test_gfp/GFP_00N.bmp and
    Test_pci/PCI_00N.bmp), or pass the DPCN-Fusion folder itself.
    """
