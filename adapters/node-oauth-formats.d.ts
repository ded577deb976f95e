declare module '@node-oauth/formats' {
  interface Formats {
    nchar(value: string): boolean;
    nqchar(value: string): boolean;
    nqschar(value: string): boolean;
    unicodechar(value: string): boolean;
    uri(value: string): boolean;
    vschar(value: string): boolean;
  }
  const formats: Formats;
  export default formats;
}
