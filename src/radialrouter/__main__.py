"""`python -m radialrouter` runs the CLI."""

from radialrouter.cli import main

main()
