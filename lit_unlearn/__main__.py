from lit_unlearn.cli import main

if __name__ == "__main__":
    main()
