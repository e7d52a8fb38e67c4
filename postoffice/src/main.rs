fn main() { println!("postoffice: not yet"); }
