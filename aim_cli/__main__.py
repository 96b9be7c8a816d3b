from aim_cli.cli import main

main()
