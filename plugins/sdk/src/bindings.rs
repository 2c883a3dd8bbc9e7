//! Guest bindings for `wit/plugin.wit` (world `hawser:plugin/plugin`), generated once
//! for every plugin. Plugin authors use the re-exports at the crate root instead.

wit_bindgen::generate!({
    path: "../../wit",
    world: "hawser:plugin/plugin",
    pub_export_macro: true,
    export_macro_name: "__export_hawser_world",
    default_bindings_module: "::hawser_plugin_sdk::bindings",
    runtime_path: "::hawser_plugin_sdk::__private::wit_bindgen::rt",
    additional_derives: [PartialEq, Eq],
});
