import sys

from mmrag.cli import main

sys.exit(main())
