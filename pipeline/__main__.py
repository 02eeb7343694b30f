"""``python -m gradsign.pipeline ...`` is the ``gradsign`` command."""

import sys

from gradsign.pipeline.cli import main

sys.exit(main())
