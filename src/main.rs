//! The `beepmyphone` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

use beepmyphone::cli::{
    admin, audit, cert, client, credentials, keys, local, Cli, Command, DeviceCommand, KeysCommand,
    TokenCommand,
};
use beepmyphone::config::{Overrides, Settings};
use beepmyphone::startup::{Application, Options};

/// jemalloc instead of the system allocator. glibc's malloc writes boundary tags at both ends of
/// every chunk, so each idle connection's 8 KiB read and write buffers (actix-http allocates them
/// at accept) cost their full size in resident pages; jemalloc keeps no in-band headers, so the
/// untouched part of a buffer stays unmapped. It is also cheaper on the publish path's many small
/// allocations. Measurements: `docs/benchmarks.md`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => {
            let overrides = Overrides {
                config: config.config,
                data_dir: config.data_dir,
                listen,
            };
            let settings = match Settings::load(&overrides) {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("beepmyphone: {e}");
                    return exit(2);
                }
            };
            serve(settings)
        }
        Command::Send(args) => exit(actix_rt::System::new().block_on(client::send(args))),
        Command::Listen(args) => exit(actix_rt::System::new().block_on(client::listen(args))),
        Command::Capture(args) => exit(
            actix_rt::System::new().block_on(beepmyphone::capture::run(args.config.as_deref())),
        ),
        Command::Bench(args) => exit(beepmyphone::bench::main(args)),
        Command::PairingCode {
            config,
            ttl,
            no_qr,
            server,
        } => local_result(local::pairing_code(
            &config,
            ttl,
            no_qr,
            server.as_deref(),
            &mut std::io::stdout(),
        )),
        Command::Token {
            command:
                TokenCommand::Create {
                    config,
                    scope,
                    name,
                },
        } => local_result(local::token_create(
            &config,
            &scope,
            &name,
            &mut std::io::stdout(),
        )),
        Command::Token {
            command: TokenCommand::List { config },
        } => local_result(credentials::token_list(&config, &mut std::io::stdout())),
        Command::Token {
            command: TokenCommand::Revoke { config, id },
        } => local_result(credentials::token_revoke(
            &config,
            &id,
            &mut std::io::stdout(),
        )),
        Command::Device {
            command: DeviceCommand::List { config },
        } => local_result(credentials::device_list(&config, &mut std::io::stdout())),
        Command::Device {
            command: DeviceCommand::Revoke { config, id },
        } => local_result(credentials::device_revoke(
            &config,
            &id,
            &mut std::io::stdout(),
        )),
        Command::Keys {
            command: KeysCommand::Rotate { data, config },
        } => local_result(keys::keys_rotate(&config, data, &mut std::io::stdout())),
        Command::Keys {
            command:
                KeysCommand::Passphrase {
                    remove,
                    passphrase_stdin,
                    config,
                },
        } => local_result(keys::keys_passphrase(
            &config,
            remove,
            passphrase_stdin,
            &mut std::io::stdout(),
        )),
        Command::Keys {
            command: KeysCommand::Status { config },
        } => local_result(keys::keys_status(&config, &mut std::io::stdout())),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "beepmyphone", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("beepmyphone: cannot write the manual page: {e}");
                    exit(1)
                }
            }
        }
        Command::Openapi => {
            println!("{}", beepmyphone::api::openapi::document_json());
            ExitCode::SUCCESS
        }
        Command::Admin { command } => local_result(admin::run(command, &mut std::io::stdout())),
        Command::Audit { command } => local_result(audit::run(command, &mut std::io::stdout())),
        Command::Cert { command } => local_result(cert::run(command, &mut std::io::stdout())),
    }
}

fn local_result(result: Result<(), local::LocalError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beepmyphone: {e}");
            exit(e.exit_code())
        }
    }
}

fn serve(settings: Settings) -> ExitCode {
    // Everything the relay creates (database, -wal/-shm, keys, tokens) is owner-only.
    beepmyphone::crypto::files::restrict_umask();
    let log = match beepmyphone::logging::build(&settings.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("beepmyphone: {e}");
            return exit(2);
        }
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        let app = Application::build(
            settings,
            Options {
                log: log.clone(),
                ..Options::default()
            },
        )
        .await?;
        app.run_until_stopped()
            .await
            .map_err(|e| beepmyphone::startup::StartError::Io(e.to_string()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            slog::crit!(log, "could not start"; "error" => %e);
            eprintln!("beepmyphone: {e}");
            drop(log);
            exit(match e {
                beepmyphone::startup::StartError::Config(_)
                | beepmyphone::startup::StartError::DataKeys(_)
                | beepmyphone::startup::StartError::Tls(_) => 2,
                _ => 1,
            })
        }
    }
}
