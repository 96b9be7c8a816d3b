from aim_cli.cli.main import main

main()
