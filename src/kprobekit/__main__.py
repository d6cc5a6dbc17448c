import sys

from kprobekit.cli.main import main

sys.exit(main())
