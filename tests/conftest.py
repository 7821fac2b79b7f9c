import os

# Never wait on the network for weights: with this set, asking for pretrained weights fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
