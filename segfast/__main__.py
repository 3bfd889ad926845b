import sys

from segfast.cli import main

sys.exit(main())
