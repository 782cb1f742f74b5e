"""What a model's output means and how it is scored: classification and segmentation.

- :mod:`~prunedyn.tasks.scoring`: the task interface (loss, augmentation, test metrics);
- :mod:`~prunedyn.tasks.segmentation`: nuclei instances from class maps, Dice, DSB 2018 mAP.
"""
