"""Building blocks the models share: PyTorch-compatible initialisers, the selective SSM and
Mamba blocks, 2-D scans and their mixers (SS2D, ES2D, Cross SS2D), VSS/DVSS blocks, patch
embedding and merging, fold heads, depthwise and LDC convolutions, channel attention and
ResNet-50."""
