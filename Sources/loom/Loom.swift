import ArgumentParser

@main
struct Loom: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loom",
        abstract: "A multi-LoRA LLM inference server.",
        subcommands: [Generate.self, Serve.self, Bench.self, GPUCheck.self]
    )
}
