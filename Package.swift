// swift-tools-version:6.0
import PackageDescription

/// Kernels are compiled with full optimisation even in debug builds, so `swift test` runs the
/// golden-model tests at a usable speed.
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"])]

let package = Package(
    name: "Loom",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "loom", targets: ["loom"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "LoomCore"),
        .target(name: "ModelFormats", dependencies: ["LoomCore"]),
        .target(name: "Tokenization", dependencies: ["LoomCore"], swiftSettings: kernelFlags),
        .target(name: "CPUBackend", dependencies: ["LoomCore"], swiftSettings: kernelFlags),
        .target(name: "Models", dependencies: ["LoomCore", "ModelFormats"]),
        .target(name: "LoRA", dependencies: ["LoomCore", "ModelFormats", "Models"]),
        .target(name: "Engine", dependencies: ["LoomCore", "ModelFormats", "Models", "LoRA", "Tokenization"]),
        .executableTarget(
            name: "loom",
            dependencies: [
                "LoomCore", "ModelFormats", "Tokenization", "Models", "LoRA", "CPUBackend",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "LoomCoreTests", dependencies: ["LoomCore"]),
        .testTarget(name: "ModelFormatsTests", dependencies: ["ModelFormats"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization"]),
        .testTarget(name: "CPUBackendTests", dependencies: ["CPUBackend"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "CPUBackend", "ModelFormats", "Tokenization"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "CPUBackend", "Models", "LoRA", "Tokenization"]),
        .testTarget(name: "CLITests", dependencies: ["loom"]),
        .testTarget(name: "LoRATests", dependencies: ["LoRA", "Models", "CPUBackend", "ModelFormats"]),
    ],
    swiftLanguageModes: [.v5]
)
