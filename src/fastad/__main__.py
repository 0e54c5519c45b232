import sys

from fastad.cli.main import main

sys.exit(main())
