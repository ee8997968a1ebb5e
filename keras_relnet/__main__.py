"""`python -m keras_relnet ...`: the `keras-relnet` command line."""

import sys

from keras_relnet.cli import main

sys.exit(main())
