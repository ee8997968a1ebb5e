"""Multi-object tracking with spatial-temporal relation networks (ICCV 2019).

`similarity_network` (the per-frame scoring model) and `SimilarityTrainer`
(its `model.fit` front), `RelationTracker` and the baselines `IoUTracker`
and `KalmanIoUTracker`, MOTChallenge files (`read_mot`, `write_mot`),
generated sequences (`generate_sequence`), training samples
(`frame_samples`) and evaluation with motmetrics (`evaluate`).
"""

from keras_relnet.tracking.baselines import IoUTracker, KalmanIoUTracker
from keras_relnet.tracking.evaluation import evaluate
from keras_relnet.tracking.mot_format import MotTable, read_mot, write_mot
from keras_relnet.tracking.online_tracker import TrackedObjects
from keras_relnet.tracking.pair_sampler import Augmentation, frame_samples
from keras_relnet.tracking.relation_tracker import RelationTracker
from keras_relnet.tracking.similarity_network import (
    SimilarityTrainer,
    masked_binary_crossentropy,
    similarity_network,
)
from keras_relnet.tracking.synthetic import DetectorModel, generate_sequence
