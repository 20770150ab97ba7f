from tokenmix.cli import main

main()
