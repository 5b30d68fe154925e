import sys

from pyro_vae.cli import main

sys.exit(main())
