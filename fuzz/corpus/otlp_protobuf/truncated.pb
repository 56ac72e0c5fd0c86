
µ


service.name

checkout”

