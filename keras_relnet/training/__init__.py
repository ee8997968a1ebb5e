"""ImageNet training with `model.fit`: the recipe, strategies, resume, evaluation."""

from keras_relnet.training.imagenet import evaluate_imagenet, train_imagenet
from keras_relnet.training.recipe import Recipe, accuracy_metrics
from keras_relnet.training.resume import StepBackup, restore
from keras_relnet.training.sgd import L2SGD, is_decayed
from keras_relnet.training.strategies import STRATEGIES, is_chief, make_strategy
