//! Standard output of the `tollgate` command. Every report line goes through
//! [`outln!`] / [`out!`] instead of `println!` / `print!`, which panic when the
//! reader has gone (`tollgate replay ... | head`). A closed pipe ends the
//! command quietly with status 0, as a reader that stops early asked for; any
//! other write error ends it with a one-line error and status 1. Either way
//! through [`tollgate_files::exit`], so no Envoy and no temporary file is left.

use std::io::Write;

/// Writes `args` to standard output, or ends the process as the module says.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        failed(&e)
    }
}

/// Ends the process for a failed write to standard output.
pub(crate) fn failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        tollgate_files::exit(0)
    }
    eprintln!("error: writing to standard output: {e}");
    tollgate_files::exit(1)
}

/// `println!` that ends the command quietly when standard output is closed.
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that ends the command quietly when standard output is closed.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};
