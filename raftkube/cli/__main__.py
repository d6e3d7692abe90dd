from raftkube.cli.main import main

main()
