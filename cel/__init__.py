"""Clustered Embedding Learning (pure PyTorch, no I/O).

- ``cel.tables``: ``ClusteredEmbedding`` (cluster rows + assignment), ``FullEmbedding``
- ``cel.baselines``: ``HashEmbedding``, ``DoubleHashEmbedding``
- ``cel.models``: ``MF`` (``nonnegative=True``: NMF), ``TwoTowerMLP``, ``NeuMF``, ``DeepFM``
- ``cel.recommender``: ``Recommender`` (user table + item table + interaction model)
- ``cel.clusters``: the one core of cluster operations: split, loss and vote moves, move
- ``cel.cluster_ops``: GPCA ``split``, ``reassign``, ``place_cold`` on a ``Recommender``
- ``cel.grad_split``: ``GradientSplitter`` (splits a table used anywhere in a model)
- ``cel.offline``: ``OfflineCEL`` trainer and ``TrainConfig``
- ``cel.build``: ``make_recommender`` for a method name at equal memory
- ``cel.metrics``: RMSE/MSE, AUC, log loss, ARI, cold buckets
- ``cel.online``: accelerated online CEL for streams
"""
