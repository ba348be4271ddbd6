"""Training pairs that nearly duplicate a test pair of another set, by dataset (never train on).

Every pair of CDDFuse's Harvard CT-MRI test set and 31 of its SPECT-MRI test set are near-copies
(mean absolute difference about 1.2-1.7 grey levels) of xianming-gu pairs; the ones in
xianming-gu's train splits are listed here under their dataset's name (docs/data.md). A run
that trains on such a split with `data.exclude_names` set to its entry leaves CDDFuse's test
sets unseen. No PET-MRI pair and no RoadScene pair has such a copy.
"""

NEAR_DUPLICATES_OF_TEST: dict[str, tuple[str, ...]] = {
  "harvard/ct_mri": tuple(
    "16007 16008 16016 21006 21007 21008 21009 21010 21011 21012 21013 21015 21016".split()
  ),
  "harvard/spect_mri": tuple(
    "9012 9013 9014 9015 9016 9017 9018 9019 9020 9021 9022 9024 9025 9026 9027 9029 9030 "
    "9033 9034 9035 9036 9037 9038 9039 9040 9041 9042 9043 9044".split()
  ),
}


def near_duplicates_of_test(dataset: str) -> tuple[str, ...]:
  """The `NEAR_DUPLICATES_OF_TEST` entry of a data.dataset name, () when it has none."""
  return NEAR_DUPLICATES_OF_TEST.get(dataset, ())
