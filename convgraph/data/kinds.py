"""The names of the data sets convgraph reads, apart from their loaders (no imports): the spec's
schema takes its ``train.dataset`` choices from here, so checking a spec loads no data code."""

# Every data set convgraph reads, as the spec's train.dataset names it: the one list, each kind
# loaded in load.py's load_dataset.
KINDS = ("embedded", "shapes", "fashion-mnist", "mnist", "cifar10", "npz", "folder")
