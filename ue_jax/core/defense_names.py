"""The battery's defense names without the defenses' code.

Every config check reads them (config/rules.py: battery.defenses), while
core/defenses.py, which implements each one, is imported only by a run
whose battery stage runs or that asks for a defense. The same names in the
same order as `defenses.NAMES` (tests/lazy_imports_test.py holds the two
equal).
"""

NAMES = ("none", "crop_flip", "cutout", "mixup", "cutmix", "gaussian_noise",
         "gaussian_blur", "median_filter", "bit_depth", "grayscale",
         "ueraser", "jpeg10", "jpeg50", "iss", "adv_train",
         "colour_standardize", "histogram_equalize")
