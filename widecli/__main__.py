from widecli.cli.app import main

main()
