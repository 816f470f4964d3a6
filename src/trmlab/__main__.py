import sys

from trmlab.cli import main

sys.exit(main())
